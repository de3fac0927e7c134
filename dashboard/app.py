"""infercast dashboard: the router. `streamlit run dashboard/app.py` (or `infercast dashboard`).

Pages live in dashboard/app_pages/ (not pages/: Streamlit would also list a pages/ folder by itself);
this file only sets the page up and picks the page.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # `streamlit run dashboard/app.py` from a checkout that is not installed
    sys.path.insert(0, _ROOT)

st.set_page_config(page_title="infercast", page_icon=":material/speed:", layout="wide")
PAGES = Path(__file__).parent / "app_pages"
st.navigation([
    st.Page(PAGES / "what_if.py", title="What-if", icon=":material/tune:", url_path="what-if", default=True),
    st.Page(PAGES / "capacity_plan.py", title="Capacity plan", icon=":material/dns:", url_path="capacity-plan"),
    st.Page(PAGES / "profiles.py", title="Profiles", icon=":material/memory:", url_path="profiles"),
    st.Page(PAGES / "validation.py", title="Validation", icon=":material/fact_check:", url_path="validation"),
]).run()
