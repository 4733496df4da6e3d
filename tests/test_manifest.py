import subprocess
import sys

import numpy as np
import pytest

from lacmfer.config import DataConfig
from lacmfer.data.domains import DOMAINS
from lacmfer.data.manifest import load_domains, read_list_file, unique_manifests
from lacmfer.errors import UserError
from tests.conftest import REPO


def touch(root, *names):
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_reads_the_field_format(tmp_path, write):
    touch(tmp_path, "a/img 1.png", "b/x.jpg", "c/y.png", "d/z.png")
    lst = write(
        "l.txt",
        "a/img 1.png 3\n"  # path with a space, label split off the end
        "\n"
        "b\\x.jpg   0   \r\n"  # Windows separator, trailing spaces, CRLF
        '"c/y.png" 6\n'  # quoted path
        "# a comment\n"
        "d/z.png\t5\n",  # tab separator
    )
    m = read_list_file(lst, tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in m.paths] == ["a/img 1.png", "b/x.jpg", "c/y.png", "d/z.png"]
    assert m.labels.tolist() == [3, 0, 6, 5]
    assert m.line_numbers.tolist() == [1, 3, 4, 6]
    assert m.labels.dtype == np.int64 and m.name == "l"


def test_a_byte_order_mark_is_not_part_of_the_first_path(tmp_path):
    touch(tmp_path, "CK/a.png", "CK/b.png")
    lst = tmp_path / "CK.txt"
    lst.write_bytes("CK/a.png 1\r\nCK/b.png 2\r\n".encode("utf-8-sig"))  # what Windows Notepad writes
    m = read_list_file(lst, tmp_path)
    assert m.paths == [tmp_path / "CK/a.png", tmp_path / "CK/b.png"] and m.labels.tolist() == [1, 2]


def test_absolute_paths_are_kept(tmp_path, write):
    touch(tmp_path, "imgs/a.png")
    lst = write("l.txt", f"{tmp_path / 'imgs/a.png'} 2\n")
    assert read_list_file(lst, tmp_path / "elsewhere").paths == [tmp_path / "imgs/a.png"]


def test_all_problems_reported_at_once_with_file_and_line(tmp_path, write):
    touch(tmp_path, "ok.png")
    lst = write("bad.txt", "ok.png 1\nmissing.png 2\nok.png 7\nok.png x\nonlyonetoken\n")
    with pytest.raises(UserError) as err:
        read_list_file(lst, tmp_path)
    lines = str(err.value).splitlines()
    assert lines == [
        f"{lst}:2: image not found: {tmp_path / 'missing.png'}",
        f"{lst}:3: label '7' is not a class id 0..6",
        f"{lst}:4: label 'x' is not a class id 0..6",
        f"{lst}:5: expected 'path label', got 'onlyonetoken'",
    ]


def test_error_limit(tmp_path, write):
    lst = write("bad.txt", "".join(f"m{i}.png 1\n" for i in range(30)))
    with pytest.raises(UserError) as err:
        read_list_file(lst, tmp_path, max_errors=5)
    lines = str(err.value).splitlines()
    assert len(lines) == 6 and lines[-1] == f"... and 25 more problems in {lst}"


def test_missing_and_empty_lists(tmp_path, write):
    with pytest.raises(UserError, match=r"nope\.txt: list file not found"):
        read_list_file(tmp_path / "nope.txt", tmp_path)
    with pytest.raises(UserError, match=r"empty\.txt: the list has no images"):
        read_list_file(write("empty.txt", "\n\n"), tmp_path)


def make_six_domains(root, per_list=14):
    """Minimal real-format lists for all six domains (each class twice)."""
    for info in DOMAINS.values():
        for list_name in {info.train_list, info.test_list}:
            stem = list_name.removesuffix(".txt")
            lines = []
            for i in range(per_list):
                name = f"{stem}/{i}.png"
                touch(root, name)
                lines.append(f"{name} {i % 7}")
            (root / list_name).write_text("\n".join(lines) + "\n")


def test_domain_registry_defaults_and_overrides(tmp_path):
    make_six_domains(tmp_path)
    touch(tmp_path, "v/0.png")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra/raf_val.txt").write_text("v/0.png 4\n")
    other = tmp_path / "other"
    make_six_domains(other, per_list=7)
    data = DataConfig(root=tmp_path, lists={"RAF": {"val": "extra/raf_val.txt"}, "CK": {"test": "JAFFE.txt"},
                                            "Aff": {"root": other}})
    domains = load_domains(data)
    assert domains["JAFFE"].train is domains["JAFFE"].test  # lab set: one list is both
    assert domains["RAF"].train.list_file.name == "RAF_train.txt"  # default name, default root
    assert domains["RAF"].val.labels.tolist() == [4]
    assert domains["Aff"].train.list_file == other / "Aff_train.txt" and len(domains["Aff"].train) == 7
    assert domains["CK"].test.list_file.name == "JAFFE.txt"
    names = sorted(m.list_file.name for m in unique_manifests(domains))
    assert names == sorted({"CK.txt", "JAFFE.txt", "Oulu.txt", "RAF_train.txt", "RAF_test.txt", "raf_val.txt",
                            "FER2013_train.txt", "FER2013_test.txt", "Aff_train.txt", "Aff_test.txt"})
    assert len(unique_manifests(domains)) == 10


def test_missing_data_root_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"data\.root: folder not found"):
        load_domains(DataConfig(root=tmp_path / "none"))


def test_cli_reports_bad_list_with_exit_2(tmp_path):
    make_six_domains(tmp_path)
    (tmp_path / "CK.txt").write_text("CK/0.png 9\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{root: {tmp_path}}}\n")
    proc = subprocess.run([sys.executable, "-m", "lacmfer.data.prebuild", "--config", str(cfg)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert f"{tmp_path / 'CK.txt'}:1: label '9' is not a class id 0..6" in proc.stderr
    assert "Traceback" not in proc.stderr
