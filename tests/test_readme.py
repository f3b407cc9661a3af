"""The front door stays true: every relative link of README and of the docs pages resolves,
and every number of README's answer (its table, findings and limits) stands in a committed
table or results file, at the rounding README gives it."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(page.read_text(encoding="utf-8"))
            if not re.match(r"[a-z]+:", target) and not target.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    broken = [t for t in relative_links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def numbers(text: str) -> set[str]:
    """The decimal numbers of a text (with a sign where it has one), less the names that
    hold digits (CIFAR-10, resnet8x4) and link targets."""
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"(?i)\b(cifar-\d+|resnet\d+(x\d+)?)\b", "", text)
    return {m.replace("−", "-") for m in re.findall(r"(?<![\w.])([+\-−]?\d+\.\d+)(?![\w])", text)}


def test_every_number_of_the_answer_stands_in_a_committed_file():
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "figures/tables", "figures/results"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert files, "no committed tables"
    corpus = "\n".join((ROOT / f).read_text(encoding="utf-8", errors="replace") for f in files).replace("−", "-")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    answer = readme[readme.index("## The answer"):readme.index("\n## ", readme.index("## The answer") + 1)]

    # every number the files hold, as each rounding of it the README could quote (1 to 3 decimals; a results JSON
    # keeps full precision; a positive difference may stand in a table without its sign)
    held = set()
    for value in (float(v) for v in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", corpus)):
        held.update(f"{value:.{d}f}" for d in (1, 2, 3))

    def found(token: str) -> bool:
        return token.lstrip("+") in held

    missing = sorted(t for t in numbers(answer) if not found(t))
    assert not missing, f"README's answer quotes numbers no committed table or results file holds: {missing}"
    assert len(numbers(answer)) > 20  # the check reads the answer, not an empty section


def test_the_number_check_catches_a_number_that_no_file_holds():
    assert numbers("TMKD − KD: −0.55 [−0.82, +0.27] on CIFAR-10, resnet8x4") == {"-0.55", "-0.82", "+0.27"}
