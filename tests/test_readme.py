"""The README a newcomer follows: its configuration table lists every setting there is (and no
setting that is not), and its links lead somewhere in this repository."""

import re
from pathlib import Path

from wearsync.models import ProviderName
from wearsync.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = README.index(f"\n{heading}\n")
    following = re.compile(rf"\n#{{1,{len(level)}}} ")
    end = following.search(README, start + 1)
    return README[start : end.start() if end else len(README)]


def table_variables() -> set[str]:
    """Every variable named in the first column of the configuration table, `<P>` expanded."""
    names: set[str] = set()
    for row in section("### Configuration").splitlines():
        if not row.startswith("| `"):
            continue
        for name in re.findall(r"`([A-Z0-9_<>]+)`", row.split(" | ")[0]):
            names |= {name.replace("<P>", p.upper()) for p in ProviderName} if "<P>" in name else {name}
    return names


def setting_variables() -> set[str]:
    """The variable each setting is read from (the first of its aliases)."""
    return set(Settings.variables().values())


def test_the_configuration_table_lists_every_setting() -> None:
    assert sorted(setting_variables() - table_variables()) == []


def test_the_configuration_table_names_only_real_settings() -> None:
    assert sorted(table_variables() - setting_variables()) == []


def test_links_lead_into_the_repository() -> None:
    anchors = {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"(?m)^#+ (.+)$", README)
    }
    for target in re.findall(r"\]\(([^)]+)\)", README):
        if target.startswith("#"):
            assert target[1:] in anchors, target
        elif not target.startswith("http"):
            assert (ROOT / target).resolve().is_relative_to(ROOT), target
            assert (ROOT / target).exists(), target
