"""``plausibility prepare custom`` under bad inputs: links that try to leave the videos folder, label sheets with a
missing column, merged header cells, extra sheets, no rows, a file that is not a workbook, and bad or repeated labels.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import datasets
import openpyxl
import pandas as pd
import pytest
from gauntlet import error_lines

from support import run_cli

HOST = "https://storage.example.com/renders/"
COLUMNS = ["output_link", "Action alignment", "Physical common sense", "Quality"]


@pytest.fixture
def team(synth_clips, tmp_path) -> dict[str, Path]:
    """videos/{a,b,c,d}.mp4, and outside/secret.mp4 reachable from videos/ only through symlinks."""
    clips = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))
    videos, outside = tmp_path / "videos", tmp_path / "outside"
    videos.mkdir()
    outside.mkdir()
    for name, clip in zip("abcd", clips):
        shutil.copyfile(clip, videos / f"{name}.mp4")
    shutil.copyfile(clips[5], outside / "secret.mp4")
    os.symlink(outside / "secret.mp4", videos / "escape.mp4")
    os.symlink(outside, videos / "sub")
    return {"root": tmp_path, "videos": videos, "outside": outside}


def _prepare(team: dict, sheet: Path, *extra: str):  # noqa: ANN202
    out = team["root"] / "out"
    return out, run_cli(
        "prepare", "custom", "--sheet", str(sheet), "--videos", str(team["videos"]), "--out", str(out), *extra
    )


def _kept(out: Path) -> list[str]:
    return [u for part in ("train", "eval") for u in datasets.load_from_disk(str(out / part))["video_url"]]


def test_links_cannot_leave_the_videos_folder(team):
    """With a rule that uses the whole link as the file name: '..', absolute paths, '~' and symlinks (to a file or to a
    folder outside) are refused and reported; the secret clip never reaches the datasets."""
    secret = team["outside"] / "secret.mp4"
    links = ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "../outside/secret.mp4", str(secret), "~/secret.mp4"]
    links += ["escape.mp4", "sub/secret.mp4"]
    labels = [1, 1, 5, 5, 5, 5, 5, 5, 5]
    sheet = team["root"] / "links.csv"
    pd.DataFrame({"output_link": links, "Physical common sense": labels}).to_csv(sheet, index=False)
    out, r = _prepare(team, sheet, "--link-pattern", "^(?P<name>.+)$", "--eval-size", "0.5")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    real = os.path.realpath(secret)
    for line in [
        "dropped 5 row(s): 5 unsafe_path",
        "  row 6: unsafe_path - refused: '../outside/secret.mp4' climbs out of the videos folder with '..'",
        f"  row 7: unsafe_path - refused: '{secret}' is an absolute path; only names inside the videos folder are used",
        "  row 8: unsafe_path - refused: '~/secret.mp4' is an absolute path; only names inside the videos folder are "
        "used",
        f"  row 9: unsafe_path - refused: 'escape.mp4' is a symlink to {real}, outside the videos folder",
        f"  row 10: unsafe_path - refused: 'sub/secret.mp4' is a symlink to {real}, outside the videos folder",
    ]:
        assert line in lines, f"{line!r} not in\n{r.stdout}"
    kept = _kept(out)
    assert len(kept) == 4 and all(Path(u).parent == team["videos"].resolve() for u in kept)
    info = json.loads((out / "split_info.json").read_text())
    assert info["dropped_by_reason"] == {"unsafe_path": 5}


def test_url_encoded_escapes_are_refused_with_the_default_rule(team):
    """The default rule takes the last segment of the URL path and decodes it after splitting, so an encoded '/' can
    only produce a name with '..' or a leading '/' - both refused."""
    links = [HOST + n for n in ("a.mp4", "b.mp4", "c.mp4", "d.mp4")]
    links += [HOST + "..%2Foutside%2Fsecret.mp4", HOST + "%2Fetc%2Fpasswd", HOST + "sub%2Fsecret.mp4"]
    sheet = team["root"] / "encoded.csv"
    pd.DataFrame({"output_link": links, "Physical common sense": [1, 1, 5, 5, 5, 5, 5]}).to_csv(sheet, index=False)
    out, r = _prepare(team, sheet, "--eval-size", "0.5")
    assert r.returncode == 0, r.stderr
    real = os.path.realpath(team["outside"] / "secret.mp4")
    for line in [
        "dropped 3 row(s): 3 unsafe_path",
        "  row 6: unsafe_path - refused: '../outside/secret.mp4' climbs out of the videos folder with '..'",
        "  row 7: unsafe_path - refused: '/etc/passwd' is an absolute path; only names inside the videos folder are "
        "used",
        f"  row 8: unsafe_path - refused: 'sub/secret.mp4' is a symlink to {real}, outside the videos folder",
    ]:
        assert line in r.stdout.splitlines(), f"{line!r} not in\n{r.stdout}"
    assert len(_kept(out)) == 4


def _workbook(path: Path, sheets: dict[str, list[list]], merges: dict[str, list[str]] | None = None) -> Path:
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
        for cells in (merges or {}).get(name, []):
            ws.merge_cells(cells)
    wb.save(path)
    return path


def _body(n: int = 4) -> list[list]:
    return [[HOST + f"{'abcd'[i]}.mp4", 1, [1, 1, 5, 5][i], 1] for i in range(n)]


def test_label_sheet_problems_are_one_line_errors(team):
    root = team["root"]
    no_label = _workbook(root / "no_label.xlsx", {"labels": [["output_link", "Action alignment", "Quality"]]})
    _, r = _prepare(team, no_label)
    assert error_lines(r) == (
        "sheet 'labels' of no_label.xlsx has no label column 'Physical common sense'; its columns are: "
        "'output_link', 'Action alignment', 'Quality'",
        "name the column with --label-column (or label_column= in a notebook)",
    )

    merged = _workbook(root / "merged.xlsx", {"labels": [COLUMNS, *_body()]}, {"labels": ["C1:D1"]})
    _, r = _prepare(team, merged)
    assert error_lines(r) == (
        "sheet 'labels' of merged.xlsx: header cells C1:D1 are merged ('Physical common sense'), so it is unclear "
        "which column holds 'Physical common sense'",
        "unmerge the header cells and give every column its own name",
    )

    readme = [["How to label"], ["1 = plausible"]]
    two = _workbook(root / "two.xlsx", {"Read me": readme, "Labels": [COLUMNS, *_body()]})
    _, r = _prepare(team, two)
    message, hint = error_lines(r)
    assert message.startswith("sheet 'Read me' of two.xlsx has no link column 'output_link'")
    assert hint.endswith("the workbook also has sheet(s) Labels (pick one with --sheet-name)")
    out, r = _prepare(team, two, "--sheet-name", "Labels", "--eval-size", "0.5")
    assert r.returncode == 0, r.stderr
    assert "read sheet 'Labels'; ignored the other sheet(s): Read me" in r.stdout.splitlines()
    assert len(_kept(out)) == 4

    empty = _workbook(root / "empty.xlsx", {"labels": []})
    _, r = _prepare(team, empty)
    assert error_lines(r) == ("sheet 'labels' of empty.xlsx is empty", None)

    header_only = _workbook(root / "header_only.xlsx", {"labels": [COLUMNS]})
    _, r = _prepare(team, header_only)
    message, _ = error_lines(r)
    assert message == f"no usable rows in {header_only}: the sheet has no data rows"

    fake = root / "fake.xlsx"
    fake.write_text("output_link,Physical common sense\n")
    _, r = _prepare(team, fake)
    message, hint = error_lines(r)
    assert message.startswith(f"cannot open {fake} as an Excel workbook: ") and hint == "save it again as .xlsx"


def test_bad_and_repeated_labels_are_counted_drops(team):
    rows = _body()
    rows += [
        [HOST + "a.mp4", 1, 5, 1],  # the same clip again
        [HOST + "b.mp4", 1, 7, 1],
        [HOST + "c.mp4", 1, "high", 1],
        [HOST + "d.mp4", 1, None, 1],
        [HOST + "d.mp4", 1, 2.5, 1],
        [HOST + "missing.mp4", 1, 3, 1],
    ]
    sheet = _workbook(team["root"] / "labels.xlsx", {"labels": [COLUMNS, *rows]})
    out, r = _prepare(team, sheet, "--eval-size", "0.5")
    assert r.returncode == 0, r.stderr
    for line in [
        "10 sheet rows: 9 matched to a video, 4 used, 6 dropped",
        "  row 6: duplicate_video - same video as row 2; the first is kept",
        "  row 7: label_out_of_range - label 7 is not a whole score 1-5",
        "  row 8: label_not_a_number - label 'high' is not a number",
        "  row 9: missing_label - no label in 'Physical common sense'",
        "  row 10: label_out_of_range - label 2.5 is not a whole score 1-5",
        f"  row 11: video_not_found - no video 'missing.mp4' in {team['videos']}",
    ]:
        assert line in r.stdout.splitlines(), f"{line!r} not in\n{r.stdout}"
    assert len(_kept(out)) == 4
