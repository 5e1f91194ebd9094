"""The engine: requests, KV block manager, scheduler, model runner and sampler."""
