"""Scoring in one place: recognition (Yes/No logits, free answers), option choice (multiple choice, a
concept's text checks) and the run table. Training, the evaluation harness, the toy benchmark and
the toy knowledge report all score with these."""
