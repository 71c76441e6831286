"""Saving a dataset folder prints no progress bar (make demo's log is the stage lines only)."""

from __future__ import annotations

import datasets

from recipe_lib.data.saving import save_dataset


def test_save_dataset_prints_no_bar_and_restores_the_setting(tmp_path, capfd) -> None:
    ds = datasets.Dataset.from_dict({"video_url": ["a.mp4", "b.mp4"], "pc": [1, 5]})
    was_off = datasets.are_progress_bars_disabled()
    datasets.enable_progress_bars()
    try:
        ds.save_to_disk(str(tmp_path / "plain"))
        assert "Saving the dataset" in capfd.readouterr().err  # what a plain save prints here
        save_dataset(ds, tmp_path / "quiet")
        assert "Saving the dataset" not in capfd.readouterr().err
        assert not datasets.are_progress_bars_disabled()  # as it was before the save
        assert datasets.load_from_disk(str(tmp_path / "quiet"))["pc"] == [1, 5]
    finally:
        if was_off:
            datasets.disable_progress_bars()
