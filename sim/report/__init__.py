"""The report floor: what a run, a plan or a sweep says to a person. Plain text (`text`), the
HTML/Markdown/JSON capacity report (`document`), the Plotly figures shared with the dashboard
(`figures`), the profile library's tables (`catalog`) and the TOML writer (`toml_writer`). It
reads results as plain data; nothing below it imports it, except the executors and the planner,
which ask `figures` for CDF and timeline points."""
