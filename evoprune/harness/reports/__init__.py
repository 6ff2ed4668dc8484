"""The tables and figures drawn from a sweep's stored runs: Tables 1-3 (`tables`), Figure 3's latency
breakdown (`fig3`) and Figure 4's schedules (`fig4`); ``scripts/render_*.py`` parse their arguments and call
them. May import every other part."""
