"""Task outputs: listing, settling, safe names and the retention sweep (pure functions, real files)."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from supervisor import outputs
from supervisor.states import Reason, State
from supervisor.verdict import Verdict
from workers.names import is_plain_name, plain_name


def test_only_plain_files_with_safe_names_are_listed(tmp_path: Path) -> None:
    directory = outputs.prepare(tmp_path, "t1")
    (directory / "page.pdf").write_bytes(b"%PDF-1.7")
    (directory / "notes.txt").write_text("hi")
    (directory / ".hidden").write_text("x")
    (directory / "sub").mkdir()
    (directory / "link.txt").symlink_to("/etc/hostname")
    os.link(directory / "notes.txt", directory / "hard.txt")  # both names now have two links
    (directory / "plain.png").write_bytes(b"\x89PNG")
    listed = outputs.list_outputs(directory)
    assert listed == [
        {"name": "page.pdf", "size_bytes": 8, "media_type": "application/pdf"},
        {"name": "plain.png", "size_bytes": 4, "media_type": "image/png"},
    ]


def test_settle_lists_files_of_a_success_and_removes_them_otherwise(tmp_path: Path) -> None:
    (outputs.prepare(tmp_path, "ok") / "a.txt").write_text("abc")
    verdict = outputs.settle(tmp_path, "ok", Verdict(State.SUCCEEDED, None, result={"x": 1}))
    assert verdict.result == {
        "x": 1,
        "files": [{"name": "a.txt", "size_bytes": 3, "media_type": "text/plain"}],
    }
    (outputs.prepare(tmp_path, "bad") / "a.txt").write_text("abc")
    killed = Verdict(State.KILLED, Reason.MEMORY_CEILING)
    assert outputs.settle(tmp_path, "bad", killed) == killed
    assert not (tmp_path / "bad").exists()
    plain = Verdict(State.SUCCEEDED, None, result={"x": 1})
    outputs.prepare(tmp_path, "none")
    assert outputs.settle(tmp_path, "none", plain) == plain  # a kind without outputs: result unchanged


def test_prepare_empties_an_earlier_attempt(tmp_path: Path) -> None:
    (outputs.prepare(tmp_path, "t") / "old.txt").write_text("x")
    assert list(outputs.prepare(tmp_path, "t").iterdir()) == []


def test_a_file_is_served_only_if_listed_and_present(tmp_path: Path) -> None:
    (outputs.prepare(tmp_path, "t") / "a.txt").write_text("abc")
    result = {"files": [{"name": "a.txt"}]}
    assert outputs.listed_file(tmp_path, "t", "a.txt", result) is not None
    assert outputs.listed_file(tmp_path, "t", "b.txt", result) is None
    assert outputs.listed_file(tmp_path, "t", "../t/a.txt", result) is None
    assert outputs.listed_file(tmp_path, "t", "a.txt", {"files": []}) is None
    (tmp_path / "t" / "a.txt").unlink()
    assert outputs.listed_file(tmp_path, "t", "a.txt", result) is None


@given(st.text(max_size=40))
def test_a_safe_name_never_leaves_its_directory(name: str) -> None:
    if is_plain_name(name):
        assert "/" not in name and "\\" not in name and "\0" not in name
        assert not name.startswith(".") and ".." not in name
        assert Path("/root", name).parent == Path("/root")


@given(st.one_of(st.none(), st.text(max_size=300)))
def test_an_uploaded_name_is_made_plain_or_replaced(filename: str | None) -> None:
    """The rule uploads and outputs share: whatever the client sends, the spool gets a plain name."""
    name = plain_name(filename, "upload-0")
    assert is_plain_name(name)
    assert Path("/spool", name).parent == Path("/spool")


def test_nul_and_separators_are_never_plain() -> None:
    for name in ("a\0b", "a/b", "a\\b", "..", ".", ".hidden", "a..b", "", "x" * 129):
        assert not is_plain_name(name), name
    assert plain_name("../../etc/passwd", "f") == "passwd"
    assert plain_name("scan\0.png", "f") == "scan_.png"
    assert plain_name("..", "f") == "f"


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.floats(0, 1000)), unique_by=lambda x: x[0]),
    st.floats(1, 500),
    st.sets(st.sampled_from(["a", "b", "c", "d"])),
)
def test_expired_are_old_enough_and_not_running(
    ages: list[tuple[str, float]], retention_s: float, active: set[str]
) -> None:
    gone = outputs.expired(ages, 1000.0, retention_s, active)
    for task_id, changed in ages:
        assert (task_id in gone) == (1000.0 - changed >= retention_s and task_id not in active)


def test_sweep_removes_expired_directories_only(tmp_path: Path) -> None:
    for name in ("old", "new", "running"):
        outputs.prepare(tmp_path, name)
    for name in ("old", "running"):
        os.utime(tmp_path / name, (0, 0))
    assert outputs.sweep(tmp_path, 3600, {"running"}) == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "running"]
