"""The evaluation kit: metrics with intervals, calibration, the collapse check, keep/reject filtering, the HTML report
and outside critics' score tables."""
