"""What every layer may use: config, errors, chat rendering, model loading, run state, files."""
