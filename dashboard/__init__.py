"""infercast's Streamlit what-if dashboard (imports sim only; no physics, prices or formulas here)."""
