"""``prepare custom``: a real-shaped label sheet (links with commas, semicolons and apostrophes in the names, as the
real VideoPhy-2 clips have) over a folder of real clips -> train/eval datasets and an account of every dropped row."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import datasets
import openpyxl
import pandas as pd
import pytest

from recipe_lib.data.custom import CustomDataConfig, LinkRule, load_split_info, prepare_custom, resolve_inside
from recipe_lib.errors import ConfigError, DataError
from support import run_cli

HOST = "https://storage.example.com/renders/"
COLUMNS = ["output_link", "Action alignment", "Physical common sense", "Quality"]


@pytest.fixture(scope="module")
def team(shared_videos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """data/{videos, prompts, labels.xlsx} as a team would hand it over, with planted problems."""
    root = tmp_path_factory.mktemp("team")
    videos, prompts = root / "videos", root / "prompts"
    videos.mkdir()
    prompts.mkdir()
    (root / "secret.mp4").write_bytes(shared_videos[0].read_bytes())  # outside the videos folder
    rows: list[dict] = []
    for i, clip in enumerate(shared_videos):
        shutil.copyfile(clip, videos / clip.name)
        if i < len(shared_videos) - 2:  # the last two clips have no prompt file
            (prompts / f"{clip.stem}.txt").write_text(clip.stem.replace("_", " ") + "\n")
        link = HOST + urllib.parse.quote(clip.name)
        if i == 1:
            link = HOST + clip.name  # not URL-encoded: commas/apostrophes as typed
        rows.append({"output_link": link, "Action alignment": 1, "Physical common sense": i % 2, "Quality": 1})
    n = len(rows)
    planted = [
        ({"output_link": HOST + "take_3_final.mp4", "Physical common sense": 1}, "video_not_found"),
        ({"output_link": HOST + "renders%20v2.mp4", "Physical common sense": 0}, "video_not_found"),
        ({"output_link": HOST + urllib.parse.quote(shared_videos[2].name), "Physical common sense": 3}, None),
        ({}, "empty_row"),
        ({"output_link": HOST + "..%2F..%2Fsecret.mp4", "Physical common sense": 1}, "unsafe_path"),
        ({"output_link": HOST + urllib.parse.quote(shared_videos[4].name), "Physical common sense": 0}, None),
        ({"output_link": HOST + urllib.parse.quote(shared_videos[5].name), "Physical common sense": None}, None),
    ]
    # Row 2+n+2 relabels clip 2 with 3 (out of range); clip 4 appears twice (duplicate); clip 5 has no label.
    planted[2] = (planted[2][0], "label_out_of_range")
    planted[5] = (planted[5][0], "duplicate_video")
    planted[6] = (planted[6][0], "missing_label")
    expected = {}
    for k, (row, reason) in enumerate(planted):
        rows.append(row)
        expected[2 + n + k] = reason
    frame = pd.DataFrame(rows, columns=COLUMNS)
    sheet = root / "labels.xlsx"
    frame.to_excel(sheet, index=False, sheet_name="labels")
    return {
        "root": root,
        "videos": videos,
        "prompts": prompts,
        "sheet": sheet,
        "frame": frame,
        "expected": expected,
        "n_clips": n,
        "clips": shared_videos,
    }


def _prepare_custom(sheet: Path, videos: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    """``plausibility prepare custom --sheet SHEET --videos VIDEOS --out OUT OPTIONS...`` in a new process."""
    return run_cli("prepare", "custom", "--sheet", str(sheet), "--videos", str(videos), "--out", str(out), *options)


def test_cli_prepare_custom_on_a_real_shaped_sheet(team: dict, tmp_path: Path) -> None:
    out = tmp_path / "split"
    proc = _prepare_custom(
        team["sheet"],
        team["videos"],
        out,
        "--prompts-dir",
        str(team["prompts"]),
        "--scale-labels",
        "--balance-labels",
        "--eval-size",
        "0.2",
        "--seed",
        "42",
    )
    assert proc.returncode == 0, proc.stderr
    n = team["n_clips"]
    expected = team["expected"]
    for row, reason in expected.items():
        assert f"row {row}: {reason}" in proc.stdout
    assert "no video 'take_3_final.mp4'" in proc.stdout and "no video 'renders v2.mp4'" in proc.stdout
    assert "climbs out of the videos folder" in proc.stdout
    assert "balancing applies to the train split only" in proc.stdout

    info = load_split_info(out)
    dropped = {d["sheet_row"]: d["reason"] for d in info["dropped_rows"]}
    # Clip 2's own row is used; its second row with label 3 is out of range, and so on.
    assert dropped == expected
    used = n  # every clip once: the planted rows only repeat clips or name missing ones
    counts = info["counts"]
    assert counts["rows_in_sheet"] == n + len(expected)
    assert counts["used"] == used and counts["dropped"] == len(expected)
    assert counts["train_before_balance"] + counts["eval"] == used
    assert info["labels"]["raw"] == {"0": n // 2, "1": n // 2}
    assert info["labels"]["scaled"] == {"1": n // 2, "5": n // 2}
    assert info["balance"]["after"] == {
        "1": info["balance"]["target_per_label"],
        "5": info["balance"]["target_per_label"],
    }
    assert sorted(info["missing_prompts"]) == sorted(c.name for c in team["clips"][-2:])
    assert info["sheet"]["sheet"] == "labels" and info["sheet"]["header_row"] == 1

    train = datasets.load_from_disk(str(out / "train"))
    evaluation = datasets.load_from_disk(str(out / "eval"))
    assert evaluation.num_rows == counts["eval"] and train.num_rows == counts["train"]
    assert set(train["pc"]) == set(evaluation["pc"]) == {1, 5}
    assert not set(train["video_url"]) & set(evaluation["video_url"])
    for ds in (train, evaluation):
        assert set(ds.column_names) >= {"video_url", "pc", "caption", "link", "sheet_row"}
        assert all(Path(u).is_file() and Path(u).parent == team["videos"].resolve() for u in ds["video_url"])
    row = train[0]
    assert row["link"] == team["frame"].loc[row["sheet_row"] - 2, "output_link"]
    with_caption = [
        c
        for c, u in zip(train["caption"], train["video_url"])
        if Path(u).stem not in {c.stem for c in team["clips"][-2:]}
    ]
    assert all(with_caption)
    dropped_csv = pd.read_csv(out / "dropped_rows.csv")
    assert list(dropped_csv["sheet_row"]) == sorted(expected)

    # The train split turns into SFT conversations unchanged.
    from recipe_lib.data.conversations import to_conversations

    conv = to_conversations(train, kind="sft")
    assert conv.num_rows == train.num_rows and json.loads(conv[0]["conversations"])[-1]["role"] == "assistant"


def test_missing_column_in_xlsx_is_a_one_line_error(team: dict, tmp_path: Path) -> None:
    sheet = tmp_path / "no_label.xlsx"
    team["frame"].drop(columns=["Physical common sense"]).to_excel(sheet, index=False)
    proc = _prepare_custom(sheet, team["videos"], tmp_path / "o")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "has no label column 'Physical common sense'" in proc.stderr
    assert "'Action alignment'" in proc.stderr  # the columns that are there are listed
    assert not (tmp_path / "o").exists()


def test_binary_labels_without_scaling_and_bad_rules_are_errors(team: dict, tmp_path: Path) -> None:
    base = {"sheet": team["sheet"], "videos_dir": team["videos"], "out_dir": tmp_path / "o"}
    with pytest.raises(DataError, match="binary") as info:
        prepare_custom(CustomDataConfig(**base))
    assert "--scale-labels" in info.value.hint
    with pytest.raises(ConfigError, match="no named group 'name'"):
        prepare_custom(CustomDataConfig(**base, scale_labels=True, link_pattern=r"renders/(.+)"))
    with pytest.raises(ConfigError, match="unknown field"):
        prepare_custom(CustomDataConfig(**base, scale_labels=True, link_template="{basename}.mp4"))
    proc = _prepare_custom(
        team["sheet"], team["videos"], tmp_path / "o", "--scale-labels", "--link-pattern", "renders/("
    )
    assert proc.returncode == 2 and "not a valid regular expression" in proc.stderr


def test_link_pattern_and_template_need_no_code_edits(team: dict, tmp_path: Path) -> None:
    clips = team["clips"]
    rows = [
        {"output_link": f"https://cdn.example.com/view?id={urllib.parse.quote(c.name)}&sig=ab12", "score": i % 2}
        for i, c in enumerate(clips)
    ]
    csv = tmp_path / "by_id.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    result = prepare_custom(
        CustomDataConfig(
            sheet=csv,
            videos_dir=team["videos"],
            out_dir=tmp_path / "a",
            label_column="score",
            scale_labels=True,
            link_pattern=r"[?&]id=(?P<name>[^&]+)",
            eval_size=0.25,
        )
    )
    assert result.n_used == len(clips) and not result.dropped

    # Links name a .mov render of the same stem; the local files are .mp4.
    rows = [
        {"output_link": f"https://cdn.example.com/r/{urllib.parse.quote(c.stem)}.mov", "score": 1 + 4 * (i % 2)}
        for i, c in enumerate(clips)
    ]
    rows.append({"output_link": "https://cdn.example.com/../secret.mov", "score": 5})
    csv = tmp_path / "by_stem.csv"
    pd.DataFrame(rows).to_csv(csv, index=False, sep=";")
    result = prepare_custom(
        CustomDataConfig(
            sheet=csv,
            videos_dir=team["videos"],
            out_dir=tmp_path / "b",
            label_column="score",
            link_template="{stem}.mp4",
            eval_size=0.25,
        )
    )
    assert result.n_used == len(clips) and [d.reason for d in result.dropped] == ["video_not_found"]
    assert "the CSV uses ';' between columns" in result.notes
    # A template over the whole URL path: a '..' in the link is refused, not followed.
    rows = [
        {"output_link": f"https://cdn.example.com/{urllib.parse.quote(c.name)}", "score": 1 + 4 * (i % 2)}
        for i, c in enumerate(clips)
    ]
    rows.append({"output_link": "https://cdn.example.com/../secret.mp4", "score": 5})
    csv = tmp_path / "by_path.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    result = prepare_custom(
        CustomDataConfig(
            sheet=csv,
            videos_dir=team["videos"],
            out_dir=tmp_path / "c",
            label_column="score",
            link_template="{path}",
            eval_size=0.25,
        )
    )
    assert result.n_used == len(clips)
    assert [(d.row, d.reason) for d in result.dropped] == [(len(clips) + 2, "unsafe_path")]
    assert "'../secret.mp4' climbs out of the videos folder" in result.dropped[0].detail


def test_paths_must_stay_inside_the_videos_folder(team: dict, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "ok.mp4").write_bytes(b"x")
    (tmp_path / "outside.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "outside.mp4", videos / "link_out.mp4")
    os.symlink(videos / "ok.mp4", videos / "link_in.mp4")
    assert resolve_inside(videos, "ok.mp4") == videos / "ok.mp4"
    assert resolve_inside(videos, "link_in.mp4") == videos / "link_in.mp4"
    for bad, why in [
        ("../outside.mp4", "'..'"),
        ("/etc/passwd", "absolute"),
        ("C:\\clips\\a.mp4", "absolute"),
        ("sub/../../outside.mp4", "'..'"),
        ("link_out.mp4", "symlink"),
    ]:
        with pytest.raises(PermissionError, match=why):
            resolve_inside(videos, bad)
    assert LinkRule().name_for(HOST + "a%2Cb%3Bc%27d.mp4") == "a,b;c'd.mp4"
    assert LinkRule().name_for(HOST + "..%2Fx.mp4") == "../x.mp4"  # decoded, then refused by resolve_inside

    # Through the whole stage: a symlink row is reported, not followed.
    shutil.copyfile(team["clips"][0], videos / "a.mp4")
    shutil.copyfile(team["clips"][1], videos / "b.mp4")
    shutil.copyfile(team["clips"][2], videos / "c.mp4")
    shutil.copyfile(team["clips"][3], videos / "d.mp4")
    (videos / "ok.mp4").unlink()
    (videos / "link_in.mp4").unlink()
    os.symlink(team["clips"][4], videos / "escape.mp4")
    rows = [
        {"output_link": HOST + n, "Physical common sense": v}
        for n, v in [("a.mp4", 1), ("b.mp4", 1), ("c.mp4", 5), ("d.mp4", 5), ("escape.mp4", 5), ("link_out.mp4", 1)]
    ]
    sheet = tmp_path / "s.xlsx"
    pd.DataFrame(rows).to_excel(sheet, index=False)
    result = prepare_custom(CustomDataConfig(sheet=sheet, videos_dir=videos, out_dir=tmp_path / "o", eval_size=0.5))
    assert {d.row: d.reason for d in result.dropped} == {6: "unsafe_path", 7: "unsafe_path"}
    assert all("outside the videos folder" in d.detail for d in result.dropped)


def _workbook(path: Path, sheets: dict[str, list[list]], merges: dict[str, list[str]] | None = None) -> Path:
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for r in rows:
            ws.append(r)
        for rng in (merges or {}).get(name, []):
            ws.merge_cells(rng)
    wb.save(path)
    return path


def test_extra_sheets_and_merged_header_cells(team: dict, tmp_path: Path) -> None:
    clips = team["clips"][:6]
    body = [[HOST + urllib.parse.quote(c.name), 1, i % 2, 1] for i, c in enumerate(clips)]
    # A read-me sheet first: the first sheet is read by default, so the error points at the other sheets.
    book = _workbook(
        tmp_path / "two.xlsx", {"Read me": [["How to label"], ["1 = plausible"]], "Labels": [COLUMNS, *body]}
    )
    base = {"videos_dir": team["videos"], "scale_labels": True, "eval_size": 0.34}
    with pytest.raises(DataError, match="has no link column 'output_link'") as info:
        prepare_custom(CustomDataConfig(sheet=book, out_dir=tmp_path / "a", **base))
    assert "Labels" in info.value.hint and "--sheet-name" in info.value.hint
    with pytest.raises(DataError, match="no sheet 'labels'"):
        prepare_custom(CustomDataConfig(sheet=book, out_dir=tmp_path / "a", sheet_name="labels", **base))
    result = prepare_custom(CustomDataConfig(sheet=book, out_dir=tmp_path / "a", sheet_name="Labels", **base))
    assert result.n_used == 6 and not result.dropped

    # Merged group titles above the header row are skipped and said so.
    titled = _workbook(
        tmp_path / "titled.xlsx", {"S": [["Video", None, "Scores", None], COLUMNS, *body]}, {"S": ["A1:B1", "C1:D1"]}
    )
    result = prepare_custom(CustomDataConfig(sheet=titled, out_dir=tmp_path / "b", **base))
    assert result.n_used == 6
    assert any("header is on row 2" in note for note in result.notes)
    assert load_split_info(tmp_path / "b")["sheet"]["header_row"] == 2
    # Sheet rows keep the numbers the spreadsheet shows: data starts on row 3 here.
    rows = [r for part in ("train", "eval") for r in datasets.load_from_disk(str(tmp_path / "b" / part))["sheet_row"]]
    assert sorted(rows) == list(range(3, 9))

    # A header cell merged over the label column and its neighbour is ambiguous: an error naming the cells.
    merged = _workbook(tmp_path / "merged.xlsx", {"S": [COLUMNS, *body]}, {"S": ["C1:D1"]})
    with pytest.raises(DataError, match="header cells C1:D1 are merged"):
        prepare_custom(CustomDataConfig(sheet=merged, out_dir=tmp_path / "c", **base))

    # Only titles in merged cells and no header: the message says so.
    only_titles = _workbook(tmp_path / "titles.xlsx", {"S": [["Scores", None, None, None], *body]}, {"S": ["A1:D1"]})
    with pytest.raises(DataError, match="merged cells \\(A1:D1 'Scores'\\)"):
        prepare_custom(CustomDataConfig(sheet=only_titles, out_dir=tmp_path / "d", **base))


def test_every_row_dropped_is_an_error_that_says_why(team: dict, tmp_path: Path) -> None:
    sheet = tmp_path / "none.csv"
    pd.DataFrame({"output_link": [HOST + "x.mp4", HOST + "y.mp4"], "Physical common sense": [1, 5]}).to_csv(
        sheet, index=False
    )
    with pytest.raises(DataError, match="no usable rows .*2 video_not_found") as info:
        prepare_custom(CustomDataConfig(sheet=sheet, videos_dir=team["videos"], out_dir=tmp_path / "o"))
    assert "--link-pattern" in info.value.hint


@pytest.mark.slow
def test_notebook_05_runs_the_custom_workflow_on_the_demo_sheet() -> None:
    import nbformat

    from recipe_lib.notebooks import run_notebook

    run = run_notebook("05_custom_dataset", {"profile": "demo"}, timeout=600)
    m = run.metrics
    planted = m["planted_problems"]
    assert sorted(planted.values()) == ["empty_row", "label_out_of_range", "video_not_found", "video_not_found"]
    assert m["dropped_by_reason"] == {"video_not_found": 2, "label_out_of_range": 1, "empty_row": 1}
    assert m["n_rows"] == 63 and m["matched"] == 60 and m["used"] == 59 and m["dropped"] == 4
    assert m["train_size_before_balance"] + m["eval_size"] == m["used"]
    assert set(m["train_label_counts"]) == {"1", "5"} and len(set(m["train_label_counts"].values())) == 1
    assert sum(m["eval_label_counts"].values()) == m["eval_size"]
    # The short SFT on the team's labels ran, and both critics were measured on the same eval split.
    assert m["steps"] > 0 and m["loss_last"] < m["loss_first"]
    assert m["n_eval"] == m["eval_size"] and 0 <= m["untrained_accuracy"] <= 1 and 0 <= m["finetuned_accuracy"] <= 1
    assert Path(m["report"]).exists() and Path(m["final_dir"], "config.json").exists()
    nb = nbformat.read(run.output, as_version=4)
    images = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert images, "the label histogram is shown"
    assert run.html is not None and run.html.exists()


def test_declared_label_range_is_scaled_and_checked(team: dict, tmp_path: Path) -> None:
    clips = team["clips"][:8]
    ratings = [0, 10, 5, 7.5, 2, 10, 0, 5]  # a 0-10 rating scale
    sheet = tmp_path / "ratings.csv"
    links = [HOST + urllib.parse.quote(c.name) for c in clips]
    pd.DataFrame({"output_link": links, "rating": ratings}).to_csv(sheet, index=False)
    base = {"sheet": sheet, "videos_dir": team["videos"], "label_column": "rating", "eval_size": 0.5}
    proc = _prepare_custom(
        sheet,
        team["videos"],
        tmp_path / "o",
        "--label-column",
        "rating",
        "--scale-labels",
        "--label-range",
        "0",
        "10",
        "--eval-size",
        "0.5",
    )
    assert proc.returncode == 0, proc.stderr
    info = load_split_info(tmp_path / "o")
    assert info["labels"]["scaled"] == {"1": 2, "2": 1, "3": 2, "4": 1, "5": 2}  # 2 -> 1.8 -> 2; 7.5 -> 4.0
    assert info["labels"]["scaling"] == "linear 0-10 -> 1-5, rounded half up"
    # Labels 2 and 4 have one clip each: they cannot be in both splits, so they stay in train, and the report says so.
    assert info["labels"]["eval"] == {"1": 1, "3": 1, "5": 1} and info["labels"]["train"]["2"] == 1
    assert any("[2, 4] have a single clip each: kept in train only" in n for n in info["notes"])
    # The default range 0-1 does not fit these ratings: an error, not a mass drop.
    with pytest.raises(DataError, match="lie outside the declared range 0-1") as exc:
        prepare_custom(CustomDataConfig(**base, out_dir=tmp_path / "p", scale_labels=True))
    assert "--label-range" in exc.value.hint
    with pytest.raises(ConfigError, match="only applies with scale_labels"):
        prepare_custom(CustomDataConfig(**base, out_dir=tmp_path / "p", label_range=(0, 10)))
