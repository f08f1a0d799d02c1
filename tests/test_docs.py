"""What the docs state by hand stays what the code says: the config groups' choices named in
the docs are the files in conf/, and every registered method has its row on a family page."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs" / "gen"))

from reference import built_in_methods, method_families  # noqa: E402


@pytest.mark.parametrize("group", ["data", "model", "train", "logger", "experiment"])
def test_the_concepts_page_names_every_choice_of_a_config_group(group):
    row = next(
        line
        for line in (ROOT / "docs" / "concepts.md").read_text().splitlines()
        if line.startswith(f"| `{group}` |")
    )
    choices = {p.stem for p in (ROOT / "conf" / group).glob("*.yaml")}
    named = set(re.findall(r"`(\w+)`", row.split("|")[2]))
    assert choices == named, f"conf/{group}: {sorted(choices)}; docs: {sorted(named)}"


def test_every_registered_method_has_a_row_on_a_family_page():
    """A new method gets its protocol and deviations written down, not only its class."""
    families = method_families()
    assert [cls.name for cls in built_in_methods() if cls.name not in families] == []
