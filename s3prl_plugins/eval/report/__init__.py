"""Reports: Markdown tables and PNG plots of the recipes' results (report, compression_report, mini)."""
