"""The storefront page: static HTML, CSS and plain JavaScript shipped in the package (serving/static),
no build step and nothing fetched from elsewhere. The page talks to the public API only."""

from importlib.resources import files

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse

router = APIRouter()
STATIC = files("serving") / "static"
NO_CACHE = {"Cache-Control": "no-cache"}


@router.get("/demo", response_class=HTMLResponse)
def demo() -> HTMLResponse:
    """The storefront page: pick a user (`?user=ID`; `?users=a,b` sets the example buttons), see their
    top-10, click an item to send a `click` event and see the list and the online history change."""
    return HTMLResponse(STATIC.joinpath("demo.html").read_text(encoding="utf-8"), headers=NO_CACHE)


@router.get("/demo/demo.css", include_in_schema=False)
def demo_css() -> Response:
    return Response(STATIC.joinpath("demo.css").read_bytes(), media_type="text/css; charset=utf-8", headers=NO_CACHE)


@router.get("/demo/demo.js", include_in_schema=False)
def demo_js() -> Response:
    return Response(
        STATIC.joinpath("demo.js").read_bytes(), media_type="text/javascript; charset=utf-8", headers=NO_CACHE
    )
