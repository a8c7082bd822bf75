"""The JWKS endpoint now lives in the package: `jwks_redis.endpoint` (see docs/python.md).

In production run the console command (waitress):

    jwks-endpoint --redis-url redis://127.0.0.1:6379/0 --key 'jwks:{auth}' --bind 0.0.0.0:8000

or mount the WSGI app in your own server:

    from jwks_redis.endpoint import make_app
    app = make_app(key="jwks:{auth}")        # JWKS_REDIS_URL, bounded timeouts
"""

from jwks_redis.endpoint import PATH, make_app  # noqa: F401  (re-exported)

if __name__ == "__main__":
    from jwks_redis.endpoint import main

    main()
