"""`mdsl init`: read what two hosts run and write the plan that moves the app.

discover.py reads the hosts (read-only probes over the run layer's backend), configs.py reads the
apps' config files (pure), writer.py writes the plan (pure; cli checks the result). Downstream of
run and check: nothing upstream imports it.
"""
