"""The tools the CLI runs, one module each: its params value and its run function.

``cluster`` (run_cluster), ``predict`` (run_predict), ``sweep`` (run_sweep),
``stats`` (run_stats), ``export`` (run_export), ``train_seg`` (run_train),
``segment`` (run_segment), ``evaluate_seg`` (evaluate), ``probe`` (probe),
``check`` (check). Only ``engine.cli`` imports this package; tools may import
each other and everything below them, never the CLI.
"""
