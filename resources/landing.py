"""The landing zone: where source systems drop daily files."""

from pathlib import Path

import dagster as dg
from pydantic import Field


class LandingZone(dg.ConfigurableResource):
    """A directory tree `<root>/<source>/date=YYYY-MM-DD/*.parquet|*.csv` on a local or mounted disk."""

    root: str = Field(description="Absolute path of the landing directory ($MLOPS_DATA_DIR/landing).")

    @property
    def path(self) -> Path:
        return Path(self.root)
