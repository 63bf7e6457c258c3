"""Strategy plugins: one file per family, all built on `clrun.plugin.StrategyPlugin`."""
