"""Reports for IG leads and data subjects: the per-run linkage audit report and SARs."""
