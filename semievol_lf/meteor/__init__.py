"""METEOR (Li et al., arXiv 2411.11933): weak-to-strong domain evolution, a second method on this plugin.

    semievol-lf meteor run recipes/meteor_demo.yaml

Stage 1 (guidelines.py, distill.py): the student writes a guideline per domain question, the teacher
answers following it, the student is fine-tuned on the teacher's answers (LlamaFactory SFT).
Stage 2 (refine.py): the student answers with reasoning, the teacher judges ("correct" or feedback with
hints), the student revises, up to `max_revisions`; every `fine_tune_interval` accepted answers, an SFT
round. Stage 3 (preferences.py): low- against high-compute answers of the student make preference
pairs for LlamaFactory's DPO stage. Stage 4 (judge.py, report.py): an LLM judge scores the student with
and without METEOR on five criteria plus an overall score. pipeline.py chains them, resumably.

Not handled: the paper's data (Stack Overflow questions, not downloadable here); data-parallel shards.
"""
