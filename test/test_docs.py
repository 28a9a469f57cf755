"""The README and the docs: short README, its test command is the one CI runs, its results table is
the one of docs/results.md, and every relative link (file and #anchor) resolves."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted({README, *(ROOT / "docs").glob("*.md"), *(ROOT / "models").glob("*.md"),
               *(ROOT / "kp_vo").glob("**/README.md")})
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^(```|    ).*$", "", path.read_text(), flags=re.MULTILINE)
    return {github_anchor(h) for h in re.findall(r"^#+ +(.+)$", text, flags=re.MULTILINE)}


def test_github_anchor():
    assert github_anchor("Keeping up with the camera (CPU, ORB)") == "keeping-up-with-the-camera-cpu-orb"
    assert github_anchor("One frame, from image to published pose (`vo_node`)") == \
        "one-frame-from-image-to-published-pose-vo_node"


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 200


def test_ci_runs_the_readme_test_command_verbatim():
    commands = [line.strip() for line in README.read_text().splitlines()
                if line.startswith("    ") and "-m pytest test" in line]
    assert len(commands) == 1, commands
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[0] in [line.strip() for line in ci]


def test_the_readme_results_table_is_the_one_of_docs_results():
    rows = [line for line in README.read_text().splitlines() if line.startswith("| ")]
    assert len(rows) >= 5
    results = (ROOT / "docs" / "results.md").read_text().splitlines()
    assert not [row for row in rows if row not in results]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: {broken}"
