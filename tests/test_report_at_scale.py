"""Reports at size: above ``page_limit`` clips the page holds the interesting clips (thumbnails as files beside it) and
pages the full table from small scripts; a 100 k-row report opens and pages in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from recipe_lib.evaluation.report import CriticScores, ReportConfig, write_report


def _rows(clips: list[Path], n: int) -> tuple[list[dict], list[dict]]:
    """n scored rows (over real clip files, so thumbnails are real) and a few skips; labels on every row."""
    rows = []
    for i in range(n):
        score = 1 + (i * 7) % 5
        probs = [0.1, 0.1, 0.1, 0.1, 0.1]
        probs[score - 1] = 0.6
        rows.append(
            {
                "key": f"k{i}",
                "video": str(clips[i % len(clips)]) if i < len(clips) else f"/clips/gen{i:06d}.mp4",
                "score": score,
                "expected_score": score - 0.2 + (i % 10) / 25,
                "probs": probs,
                "raw_output": str(score),
                "item": {"pc": 1 + (i * 3) % 5, "caption": f"clip {i}"},
            }
        )
    skipped = [{"video": f"/clips/bad{i}.mp4", "reason": "video not found"} for i in range(5)]
    return rows, skipped


def _report(tmp_path: Path, clips: list[Path], n: int, **kw):  # noqa: ANN202
    rows, skipped = _rows(clips, n)
    critic = CriticScores(name="tiny", model="tiny", rows=rows, skipped=skipped)
    return write_report([critic], ReportConfig(out_path=tmp_path / "report.html", **kw))


def _clips(synth_clips) -> list[Path]:  # noqa: ANN001
    return sorted((synth_clips.out_dir / "videos").glob("*.mp4"))


def test_small_report_stays_one_self_contained_file(synth_clips, tmp_path):
    result = _report(tmp_path, _clips(synth_clips), 40)
    page = result.html.read_text()
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert not (tmp_path / "report_files").exists() and 'id="all"' not in page


def test_large_report_shows_the_interesting_clips_and_pages_the_rest(synth_clips, tmp_path):
    clips = _clips(synth_clips)
    result = _report(tmp_path, clips, 5000, page_limit=2000, page_size=1000, highlights=50)
    page = result.html.read_text()
    assert len(page) < 3_000_000, len(page)
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert srcs and all(s.startswith("report_files/thumbs/") and (tmp_path / s).is_file() for s in srcs)
    for why in ("lowest score", "highest score", "disagrees with its label", "skipped", "random sample"):
        assert why in page, why
    shown = page.count('<tr class="sample"')
    assert 50 < shown <= 6 * 50
    pages = sorted((tmp_path / "report_files").glob("table-*.js"))
    assert len(pages) == 6  # 5000 scored clips and 5 skips
    rows = json.loads(re.fullmatch(r"window\.reportPage\(4, (.*)\);\n", pages[4].read_text()).group(1))
    assert len(rows) == 1000 and rows[-1][0] == "gen004999.mp4"
    assert len(json.loads((tmp_path / "evaluation_results.json").read_text())["samples"]) == 5005


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no chromium on this machine (apt-get install chromium) to open the report in")


@pytest.mark.slow
def test_a_100k_row_report_renders_in_headless_chromium(synth_clips, tmp_path):
    browser = _chromium()
    _report(tmp_path, _clips(synth_clips), 100_000)
    start = time.perf_counter()
    r = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--virtual-time-budget=10000", "--dump-dom", (tmp_path / "report.html").as_uri()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert 'data-page="1"' in dom, "the first page of the full table was loaded by its script"
    body = dom[dom.index('id="all-rows"') :]
    assert body.count("<tr>") >= 1000 and "gen000999.mp4" in body
    assert seconds < 120, f"took {seconds:.0f} s to render"
