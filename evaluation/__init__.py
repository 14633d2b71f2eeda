"""The benchmark harness (recognition, visual/text QA, generation similarity) lives here.

Training already reports held-out recognition accuracy from Yes/No logits
(`yochameleon.metrics.recognition`); the full harness with baselines and reports
is tracked in the "Evaluation harness" issue.
"""
