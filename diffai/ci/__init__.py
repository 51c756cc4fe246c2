"""diffai in CI: the GitHub Action, its configuration and its GitHub API client."""
