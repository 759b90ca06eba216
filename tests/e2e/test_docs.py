"""The documentation holds together: every relative link in README.md, BENCHMARKS.md and docs/
points at a file that exists, and every `#anchor` at a heading of that file (GitHub's anchor
rules). The configuration reference is checked against the schema by `cargo test --features cli`."""

import re

from harness.envoy import ROOT


def anchor(heading):
    a = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return a.replace(" ", "-")


def anchors(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {anchor(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}


def test_every_link_points_somewhere():
    pages = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for label, target in re.findall(r"\[([^\]]+)\]\(([^)\s]+)\)", text):
            if re.match(r"^(https?:|mailto:)", target):
                continue
            file, _, frag = target.partition("#")
            dest = page if not file else (page.parent / file).resolve()
            if not dest.exists():
                broken.append(f"{page.name}: [{label}]({target}): no such file")
            elif frag and dest.suffix == ".md" and frag not in anchors(dest):
                broken.append(f"{page.name}: [{label}]({target}): no such heading")
    assert not broken, "\n".join(broken)


def test_every_feature_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, page.name
