"""The HTML report: self-contained, every number also in evaluation_results.json, and no text can inject markup."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from recipe_lib.evaluation.metrics import METRICS, suite_from_rows
from recipe_lib.evaluation.report import CriticScores, ReportConfig, ReportSection, write_report
from recipe_lib.inference.score_config import ScoreConfig
from recipe_lib.inference.scoring import score_videos
from recipe_lib.profiles import get_profile

PAYLOAD = "<script>alert(1)</script>"


class PageParser(HTMLParser):
    """Collects elements (tag, attributes), script bodies and the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)


def parse(html: str) -> PageParser:
    p = PageParser()
    p.feed(html)
    p.close()
    return p


@pytest.fixture(scope="module")
def scored(tiny_critic, synth_clips, tmp_path_factory):
    demo = get_profile("demo")
    out = tmp_path_factory.mktemp("report_scores")
    cfg = ScoreConfig(
        inputs=[str(synth_clips.dataset_dir)],
        out_dir=out,
        model=str(tiny_critic),
        video=demo.video,
        sampling=demo.sampling,
        device="cpu",
        dtype="float32",
    )
    return score_videos(cfg, progress=False)


def test_report_contents_and_numbers(scored, tmp_path):
    suite = suite_from_rows(scored.rows, n_boot=200)
    section = ReportSection(title="Extra table", text="numbers", table=[{"kind": "x", "value": 0.25}])
    res = write_report(
        [CriticScores("tiny", "tiny-critic", scored.rows, scored.skipped, suite)],
        ReportConfig(out_path=tmp_path / "r" / "report.html", title="Demo report"),
        sections=[section],
    )
    html = res.html.read_text()
    page = parse(html)
    # Self-contained: every image is an embedded data URI, nothing is fetched.
    imgs = [a for t, a in page.tags if t == "img"]
    assert len(imgs) == len(scored.rows) + 1  # one thumbnail per clip + one confusion matrix
    assert all(a["src"].startswith("data:image/") for a in imgs)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert [t for t, a in page.tags if t == "link"] == []
    for a in imgs:
        raw = base64.b64decode(a["src"].split(",", 1)[1])
        assert Image.open(io.BytesIO(raw)).size[0] > 10
    rows = [a for t, a in page.tags if t == "tr" and a.get("class") == "sample"]
    assert len(rows) == len(scored.rows)
    assert {a["data-label"] for a in rows} <= {"1", "2", "3", "4", "5"}
    assert {a["data-correct-0"] for a in rows} <= {"correct", "wrong"}
    assert {t for t, _ in page.tags} >= {"select", "table"}  # expected mode has no raw output to fold away
    # The JSON holds every number of the page.
    data = json.loads(res.json.read_text())
    assert res.json.name == "evaluation_results.json"
    m = data["critics"][0]["metrics"]
    assert set(m["metrics"]) == set(METRICS) and m["n"] == len(scored.rows)
    for name in ("accuracy", "within1", "mae", "f1"):
        assert m["metrics"][name] == pytest.approx(suite[name])
        assert f"{suite[name]:.3f}" in html
        lo, hi = suite.intervals[name]
        assert m["intervals"][name] == pytest.approx([lo, hi])
    assert sum(map(sum, m["confusion"]["counts"])) == len(scored.rows)
    assert data["sections"][0]["table"] == [{"kind": "x", "value": 0.25}]
    assert len(data["samples"]) == len(scored.rows)
    assert all(len(s["predictions"][0]["probs"]) == 5 for s in data["samples"])


def test_report_without_labels_and_with_unreadable_clips(scored, tmp_path):
    rows = [{**r, "item": {"video_url": r["video"]}} for r in scored.rows[:3]]
    rows.append({**scored.rows[3], "video": str(tmp_path / "gone.mp4"), "item": {}})
    skipped = [{"video": str(tmp_path / "empty.mp4"), "reason": "video is an empty file (0 bytes)"}]
    res = write_report([CriticScores("tiny", "m", rows, skipped, None)], ReportConfig(out_path=tmp_path / "r.html"))
    html = res.html.read_text()
    page = parse(html)
    assert 'id="metrics"' not in html  # no labels, no metric table
    assert len([a for t, a in page.tags if t == "img"]) == 3  # the missing clip gets text, not a broken image
    text = " ".join(page.text)
    assert "no preview" in text and "video is an empty file (0 bytes)" in text
    assert res.data["critics"][0]["decisions"]["skipped"] == 1


def test_text_is_escaped_never_markup(scored, synth_clips, tmp_path):
    clips = sorted((synth_clips.out_dir / "videos").glob("*.mp4"))
    odd_dir = tmp_path / "<script>alert(1)<"
    odd_dir.mkdir()
    path_with_payload = odd_dir / "script>.mp4"  # the full path contains <script>alert(1)</script>
    shutil.copy(clips[0], path_with_payload)
    name_with_markup = tmp_path / '<img src=x onerror=alert(2)> & "q".mp4'
    shutil.copy(clips[1], name_with_markup)
    assert PAYLOAD in str(path_with_payload)
    base = scored.rows[0]
    rows = [
        {
            **base,
            "video": str(path_with_payload),
            "score": None,
            "parse_error": f"answer is not a number 1-5: '{PAYLOAD}'",
            "raw_output": f"<think>{PAYLOAD}</think><answer>{PAYLOAD}</answer>",
            "item": {"video_url": str(path_with_payload), "caption": PAYLOAD, "pc": 3},
        },
        {
            **base,
            "video": str(name_with_markup),
            "raw_output": PAYLOAD,
            "item": {"video_url": str(name_with_markup), "caption": "a ball & a <b>box</b>", "pc": 5},
        },
    ]
    skipped = [{"video": f"/data/{PAYLOAD}.mp4", "reason": f"not a readable video: {PAYLOAD}"}]
    suite = suite_from_rows(rows, n_boot=20)
    res = write_report(
        [CriticScores(PAYLOAD, PAYLOAD, rows, skipped, suite)],
        ReportConfig(out_path=tmp_path / "x.html", title=f"title {PAYLOAD}", subtitle=PAYLOAD),
        sections=[ReportSection(title=PAYLOAD, text=PAYLOAD, table=[{PAYLOAD: PAYLOAD}])],
    )
    html = res.html.read_text()
    page = parse(html)
    # Exactly one script element (the report's own filter code), and nothing injected into it.
    assert len(page.scripts) == 1 and "alert" not in page.scripts[0]
    for tag, attrs in page.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        assert tag not in ("iframe", "object", "embed", "svg")
        if tag == "img":
            assert attrs["src"].startswith("data:image/")
    text = "".join(page.text)
    assert text.count(PAYLOAD) >= 8  # title, caption, raw outputs, file path, reasons, section, critic name
    assert '<img src=x onerror=alert(2)> & "q".mp4' in text
    assert "a ball & a <b>box</b>" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert sum(1 for t, _ in page.tags if t == "details") == 2  # raw outputs, collapsed
    # Both odd files still got their real thumbnails.
    assert sum(1 for t, a in page.tags if t == "img" and a.get("class") == "thumb") == 2
    assert json.loads(res.json.read_text())["samples"][0]["caption"] == PAYLOAD


def test_report_needs_a_critic(tmp_path):
    from recipe_lib.errors import RecipeError

    with pytest.raises(RecipeError, match="at least one critic"):
        write_report([], ReportConfig(out_path=Path(tmp_path / "r.html")))
