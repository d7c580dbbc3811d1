"""The sources say what the code is, not its history, and cite only what the repository holds."""

from __future__ import annotations

import re

from tests.support import REPO_ROOT

PROJECT_TEXT = [*sorted((REPO_ROOT / "vitzoo").rglob("*.py")), REPO_ROOT / "README.md",
                *sorted((REPO_ROOT / "docs").glob("*.md"))]


def test_no_comment_narrates_a_hook_or_history():
    narrating = re.compile(r"#\s*hook\b", re.IGNORECASE)
    assert [p.name for p in PROJECT_TEXT if narrating.search(p.read_text(encoding="utf-8"))] == []


def test_no_source_cites_a_file_outside_the_repository():
    outside = re.compile(r"shared/reference|\.\./shared/")
    assert [p.name for p in PROJECT_TEXT if outside.search(p.read_text(encoding="utf-8"))] == []
