"""The HTTP service: online features -> model -> top-k, and the feedback write path.

`app.py` builds the app and opens what requests share; `routes/` holds one router per resource;
`deps.py` the dependencies routes declare; the rest are the objects those dependencies hand out.
"""
