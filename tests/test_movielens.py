import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.main import app
from rtrec.movielens import ML100K_GENRES, MovieLensError, import_movielens


def flags(*names):
    return "|".join("1" if g in names else "0" for g in ML100K_GENRES)


def write_ml100k(folder, ratings=None):
    folder.mkdir(parents=True, exist_ok=True)
    ratings = ratings or ["1\t10\t4\t881250949", "2\t10\t3\t881250950", "1\t20\t5\t881250951"]
    (folder / "u.data").write_text("\n".join(ratings) + "\n")
    (folder / "u.item").write_bytes(
        (
            f"10|Toy Story (1995)|01-Jan-1995||http://x|{flags('Animation', 'Comedy')}\n"
            f"20|Caf\xe9 Noir (1947)|01-Jan-1947||http://y|{flags('Film-Noir')}\n"
        ).encode("latin-1")
    )
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    return folder


def write_ml1m(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("1::10::4::978300760\n2::20::2::978302109\n")
    (folder / "movies.dat").write_text("10::Heat (1995)::Action|Crime|Thriller\n20::Up (2009)::Animation\n")
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return folder


def write_recbole(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ml.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t881250949\n"
    )
    (folder / "ml.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Comedy\n"
    )
    (folder / "ml.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n1\t24\tM\ttechnician\t85711\n"
    )
    return folder


@pytest.mark.parametrize(
    ("writer", "layout", "events", "category", "age"),
    [
        (write_ml100k, "ml-100k", 3, "Animation", 24),
        (write_ml1m, "ml-1m", 2, "Action", 1),
        (write_recbole, "recbole", 1, "Animation", 24),
    ],
)
def test_each_layout_lands_ratings_catalog_and_users(tmp_path, writer, layout, events, category, age):
    manifest = import_movielens(writer(tmp_path / "src"), tmp_path / "landing")
    assert (manifest["format"], manifest["clean_events"]) == (layout, events)
    ev = pq.read_table(tmp_path / "landing" / "events").to_pylist()
    assert {e["event_type"] for e in ev} == {"rating"}
    assert ev[0]["user_id"] == "1" and ev[0]["item_id"] == "10" and ev[0]["ts"].endswith("Z")
    assert len({e["event_id"] for e in ev}) == events
    item = pq.read_table(tmp_path / "landing" / "items.parquet").to_pylist()[0]
    assert (item["item_id"], item["category"]) == ("10", category)
    user = pq.read_table(tmp_path / "landing" / "users.parquet").to_pylist()[0]
    assert (user["user_id"], user["age"]) == ("1", age)


def test_latin1_titles_survive(tmp_path):
    import_movielens(write_ml100k(tmp_path / "src"), tmp_path / "landing")
    titles = pq.read_table(tmp_path / "landing" / "items.parquet").column("title").to_pylist()
    assert "Caf\xe9 Noir (1947)" in titles


def test_truncated_file_names_file_and_line(tmp_path):
    src = write_ml100k(tmp_path / "src", ["1\t10\t4\t881250949", "2\t10\t3\t881250950", "1\t20"])
    with pytest.raises(MovieLensError, match=r"u\.data:3: expected 4 fields, found 2"):
        import_movielens(src, tmp_path / "landing")


def test_non_numeric_rating_names_file_and_line(tmp_path):
    src = write_ml100k(tmp_path / "src", ["1\t10\tfour\t881250949"])
    with pytest.raises(MovieLensError, match=r"u\.data:1: rating 'four' is not a number"):
        import_movielens(src, tmp_path / "landing")


def test_a_failed_import_leaves_the_previous_landing_zone_alone(tmp_path):
    import_movielens(write_ml1m(tmp_path / "good"), tmp_path / "landing")
    bad = write_ml100k(tmp_path / "bad", ["1\t10"])
    with pytest.raises(MovieLensError):
        import_movielens(bad, tmp_path / "landing")
    assert pq.read_table(tmp_path / "landing" / "events").num_rows == 2


def test_cli_reports_a_bad_folder_without_a_traceback(data_dir, tmp_path):
    result = CliRunner().invoke(app, ["import", "movielens", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "not a folder" in result.output
