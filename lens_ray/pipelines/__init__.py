"""The jobs, stage by stage: the main run (run.py), the search (search.py), the learning curve (curve.py),
synthesis at scale (synthesize.py), batch scoring (batch_score.py), the checks made before Ray starts
(preflight.py) and the reports (report.py, report_html.py). Each composes the math, the stores and the Ray
layer, and adds ordering, progress, reuse of what is stored and the report.

What it may import: every package below it; only `cli.py` and `jobs/` import it.
"""
