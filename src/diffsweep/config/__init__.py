"""The config layer: the schema a composed config is validated against, the typed config it becomes, and the
checks of settings that need an optional extra."""
