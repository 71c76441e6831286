"""Scripts cosmos-rl runs (``cosmos-rl --config run.toml <entry>.py``) and the datasets/rewards they hand to it."""
