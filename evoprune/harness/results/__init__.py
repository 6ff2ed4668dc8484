"""What a run keeps and reports: run identity and sample journal, the judge policy and option-letter
parsing, the video benchmarks' derived scores, the paper's numbers and formulas, latency reports, rendered
tables. Imports the parts before it (``common`` … ``inference``) only."""
