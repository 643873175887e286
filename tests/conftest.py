pytest_plugins = ["reqspec_repo.pytest_plugin"]
