"""The practitioner workspace: server-rendered web pages on the governance decisions."""
