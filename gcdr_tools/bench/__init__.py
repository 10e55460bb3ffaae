"""Benchmarks (`make bench`): speed and memory of each stage, measured outside the test suite.

    run.py       the runner: every row in a fresh process, bench.json and BENCHMARKS.md (pipelines/bench.py)
    memory.py    fresh processes and their peak memory
    vqa.py       Grad-CAM persons / second, batched vs per person
    teacher.py   refine persons / second; the teacher's training step (the one training runs)
    students.py  student training samples / second and time per part
"""
