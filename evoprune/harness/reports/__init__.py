"""The tables and figures drawn from a sweep's stored runs: Tables 1-3 beside the paper's (`paper_table`),
Figure 3's time to first token per stage (`fig3`) and Figure 4's schedules (`fig4`); ``scripts/render_*.py``
pass their command line to them through `evaluation.sweep.renderer_main`. May import every other part."""
