-- Retention (SPEC §8): dead letters are purged oldest first by `dead_at`, in batches; without an
-- index each batch would read the whole table. (Results are purged by `completed_at`, which
-- `request_results_completed_at` already indexes; rejections have their own index on `at`.)

CREATE INDEX dead_letters_dead_at ON dead_letters (dead_at);
