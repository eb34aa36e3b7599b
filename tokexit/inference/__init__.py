"""Inference above the engine (torch only, no Lightning): one runner for every task (:mod:`~.runs`, with the task
sides :mod:`~.tagging` and :mod:`~.classification`), predictions collected back in the data's order
(:mod:`~.collect`), the setting a run uses (:mod:`~.setting`: exit policy and token fate), the one timing protocol
(:mod:`~.timing`), calibration of a knob for a target speed-up (:mod:`~.calibration`) and the evaluation of a model
on a file (:mod:`~.evaluator`)."""
