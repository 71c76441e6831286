"""One module per notebook stage, each with a typed config, a typed result and one entry ``run_<stage>(cfg)`` that the
notebook and the ``plausibility`` command call: ``explore`` (01), ``zero_shot`` (02), ``sft`` (03), ``grpo`` (04),
``custom_data`` (05), ``evaluate`` (06), ``at_scale`` (07), and ``score`` / ``calibrate`` for the commands of the same
name. ``training`` holds what ``sft`` and ``grpo`` share."""
