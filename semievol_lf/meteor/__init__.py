"""METEOR (Li et al., arXiv 2411.11933): weak-to-strong domain evolution, a second method on this plugin.

    semievol-lf meteor run recipes/meteor_demo.yaml

Stage 1 (guidelines.py, distill.py): the student writes a guideline per domain question, the teacher
answers following it, the student is fine-tuned on the teacher's answers (LlamaFactory SFT).
Stage 2 (refine.py): the student answers with reasoning, the teacher judges ("correct" or feedback with
hints), the student revises, 3 attempts in all; every `fine_tune_interval` training items, an SFT round.
Stage 3 (preferences.py): the student's greedy answer against its sampled ones, the longer preferred,
train a reference-free preference loss (LlamaFactory's SimPO). Stage 4 (judge.py, report.py): an LLM
judge ranks the student of every stage on five criteria, all answers to a question in one prompt, with
bootstrap intervals and pairwise win rates. pipeline.py chains them, resumably.

Not handled: the paper's data (Stack Overflow questions, not downloadable here); data-parallel shards.
"""
