"""What tokexit reports and how: scores of predictions (:mod:`~tokexit.reporting.scores`), the tables and JSON files
every entry point writes (:mod:`~tokexit.reporting.output`), accuracy-vs-speed-up curves
(:mod:`~tokexit.reporting.tradeoff`)."""
