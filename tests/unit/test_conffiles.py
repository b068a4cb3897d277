"""conffiles: njet.conf read from disk, includes expanded, and the bounds that keep a bad or
hostile conf from hanging the controller (FIFOs, devices, huge files, include bombs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.conffiles import MAX_INCLUDES, load_conf, parse_file
from controller.njetconf import ConfSyntaxError


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def refusal(main: Path, **kwargs: int) -> ConfSyntaxError:
    with pytest.raises(ConfSyntaxError) as info:
        load_conf(main, **kwargs)
    return info.value


# --- a glob matching nothing ---------------------------------------------------------------


@pytest.mark.parametrize("make_dir", [False, True], ids=["missing", "empty"])
def test_a_glob_matching_nothing_is_a_warning_with_file_and_line(
    tmp_path: Path, make_dir: bool
) -> None:
    main = write(tmp_path, "conf/njet.conf", "x 1;\nhttp {\n  include conf.d/*.conf;\n}\n")
    if make_dir:
        (tmp_path / "conf" / "conf.d").mkdir()
    loaded = load_conf(main)
    assert [d.name for d in loaded.directives] == ["x", "http"]
    (warning,) = loaded.warnings
    assert (warning.file, warning.line, warning.origin) == (str(main), 3, f"{main}:3")
    assert warning.subject == "include conf.d/*.conf" and "matches no files" in warning.reason
    # the folder a new match would appear in is watched, whether it exists yet or not
    assert str(tmp_path / "conf" / "conf.d") in loaded.files


def test_a_glob_that_matches_gives_no_warning_and_a_plain_missing_path_stays_an_error(
    tmp_path: Path,
) -> None:
    main = write(tmp_path, "njet.conf", "include sites/*.conf;\ninclude sites/none.conf;\n")
    write(tmp_path, "sites/a.conf", "a 1;\n")
    err = refusal(main)
    assert (err.file, err.line) == (str(main), 2) and "No such file" in err.reason
    main.write_text("include sites/*.conf;\n")
    loaded = load_conf(main)
    assert loaded.warnings == () and [d.name for d in loaded.directives] == ["a"]
    assert loaded.files == {str(main), str(tmp_path / "sites"), str(tmp_path / "sites/a.conf")}


def test_an_empty_glob_included_many_times_warns_once_per_site(tmp_path: Path) -> None:
    main = write(tmp_path, "njet.conf", "include x.conf;\ninclude x.conf;\n")
    x = write(tmp_path, "x.conf", "include none/*.conf;\n")
    assert [(w.file, w.line) for w in load_conf(main).warnings] == [(str(x), 1)]


# --- special files -------------------------------------------------------------------------


def test_an_include_of_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    main = write(tmp_path, "njet.conf", "http {\n  include pipe.conf;\n}\n")
    os.mkfifo(tmp_path / "pipe.conf")  # nobody writes: a blocking open would hang forever
    err = refusal(main)
    assert (err.file, err.line) == (str(main), 2)
    assert str(tmp_path / "pipe.conf") in err.reason and "not a regular file (a FIFO)" in err.reason


def test_an_include_of_dev_zero_is_refused_before_reading(tmp_path: Path) -> None:
    main = write(tmp_path, "njet.conf", "x 1;\ninclude /dev/zero;\n")
    err = refusal(main)
    assert (err.file, err.line) == (str(main), 2)
    assert "/dev/zero" in err.reason and "a character device" in err.reason


def test_a_glob_matching_a_fifo_is_refused(tmp_path: Path) -> None:
    main = write(tmp_path, "njet.conf", "include d/*.conf;\n")
    write(tmp_path, "d/a.conf", "a 1;\n")
    os.mkfifo(tmp_path / "d" / "b.conf")
    err = refusal(main)
    assert err.line == 1 and "a FIFO" in err.reason and str(tmp_path / "d/b.conf") in err.reason


def test_a_symlinked_include_is_read_when_its_target_is_a_regular_file(tmp_path: Path) -> None:
    main = write(tmp_path, "njet.conf", "include sites-enabled/*;\n")
    target = write(tmp_path, "sites-available/a.conf", "a 1;\n")
    (tmp_path / "sites-enabled").mkdir()
    (tmp_path / "sites-enabled" / "a.conf").symlink_to(target)
    os.mkfifo(tmp_path / "fifo")
    assert [d.name for d in parse_file(main)] == ["a"]
    (tmp_path / "sites-enabled" / "b.conf").symlink_to(tmp_path / "fifo")
    err = refusal(main)
    assert err.line == 1 and "a FIFO" in err.reason


def test_a_main_conf_that_is_a_fifo_or_a_directory_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "njet.conf")
    err = refusal(tmp_path / "njet.conf")
    assert (err.file, err.line) == (str(tmp_path / "njet.conf"), 0) and "a FIFO" in err.reason
    assert "a directory" in refusal(tmp_path).reason


# --- size and count bounds -----------------------------------------------------------------


def test_conf_bytes_are_capped_in_all_counting_every_expansion(tmp_path: Path) -> None:
    body = "x " + "a" * 1000 + ";\n"  # 1,004 bytes
    main = write(tmp_path, "njet.conf", "include big.conf;\ninclude big.conf;\n")
    write(tmp_path, "big.conf", body)
    assert len(load_conf(main, max_bytes=3000).directives) == 2
    err = refusal(main, max_bytes=2000)  # each file alone fits; the second expansion does not
    assert (err.file, err.line) == (str(main), 2)
    assert "maxConfBytes (2000 bytes)" in err.reason and str(tmp_path / "big.conf") in err.reason


def test_a_main_conf_larger_than_the_cap_is_refused(tmp_path: Path) -> None:
    main = write(tmp_path, "njet.conf", "x 1;\n" * 300)
    err = refusal(main, max_bytes=1024)
    assert (err.file, err.line) == (str(main), 0) and "maxConfBytes (1024 bytes)" in err.reason


def include_bomb(root: Path, files: int) -> Path:
    """`files` small files, each including the next one twice: 2**(files-1) expansions."""
    for i in range(files):
        text = f"include b{i + 1}.conf;\ninclude b{i + 1}.conf;\n" if i + 1 < files else "w 1;\n"
        write(root, f"b{i}.conf", text)
    return root / "b0.conf"


@pytest.mark.parametrize("files", [31, 19], ids=["31-files", "depth-18"])
def test_an_include_bomb_is_refused_naming_where_the_bound_was_hit(
    tmp_path: Path, files: int
) -> None:
    err = refusal(include_bomb(tmp_path, files))
    assert f"more than {MAX_INCLUDES} included files" in err.reason
    assert Path(err.file).parent == tmp_path and err.line in (1, 2)
    assert str(err).startswith(f"{err.file}:{err.line}: include ")


def test_many_includes_below_the_bound_still_load(tmp_path: Path) -> None:
    main = include_bomb(tmp_path, 11)  # 1,024 expansions of the last file
    assert len(parse_file(main)) == 1024
