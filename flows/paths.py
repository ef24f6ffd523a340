"""Where the project's non-Python parts live, relative to this checkout."""

from pathlib import Path

from rtrec.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"


def dbt_env(data_dir: Path) -> dict[str, str]:
    """What a dbt run over `data_dir` reads from the environment: the data's location, and target
    and log folders of its own there, so runs over two data directories never share a manifest,
    run results or partial-parse state (nor `dbt retry`'s memory of what failed)."""
    folder = Settings(data_dir=data_dir.resolve()).dbt_dir
    return {
        "RTREC_DATA_DIR": str(data_dir.resolve()),
        "DBT_TARGET_PATH": str(folder / "target"),
        "DBT_LOG_PATH": str(folder / "logs"),
    }
