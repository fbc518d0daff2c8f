"""Model parts as plain nn.Modules: nothing here knows about DeepSpeed."""
