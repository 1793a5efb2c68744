"""Agency-side IG bridge: runs on the agency's own infrastructure.

Nothing here may import from the hub side (linkage, governance, dags): the bridge installs
alone with `pip install .[bridge]`.
"""
