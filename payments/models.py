# Filled by the issue that builds this app.
