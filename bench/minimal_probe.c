/* The floor of a compiled exec probe: one libpq login from the environment (PG* variables) or a conninfo
 * argument, one line on stderr (libpq's error when it fails), exit 0 or 1. Not a product: bench/image_cost.py builds it (gcc, libpq's
 * headers) and runs it in the image beside psql and `sharedpg wait-for-db --once`, to show what a probe
 * that is not a Python program would cost. */
#include <stdio.h>
#include <libpq-fe.h>

int main(int argc, char **argv) {
    PGconn *conn = PQconnectdb(argc > 1 ? argv[1] : "");
    int ok = PQstatus(conn) == CONNECTION_OK;
    fprintf(stderr, "{\"level\": \"%s\", \"event\": \"%s\"}\n", ok ? "info" : "error",
            ok ? "database ready" : PQerrorMessage(conn));
    PQfinish(conn);
    return ok ? 0 : 1;
}
