"""Front ends for the compiler-task models: prompts, answer extraction, verification."""
