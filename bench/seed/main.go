// Command seed fills a Vestibule database with enrolled devices for the
// scale measurements (bench/README.md): -devices in all, the first
// -pending of them waiting for approval, the rest approved, each with its
// own certificate from the server's SCEP CA. It writes the devices a load
// generator needs to check in as them (-out): every pending device and
// -export approved ones, spread evenly over the seeded range.
//
//	go run ./cmd/vestibule serve --dev      # once, to create ./data; then stop it
//	go run ./bench/seed -devices 100000 -out /tmp/seed.json
package main

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/vestibule-mdm/vestibule/internal/seed"
	"github.com/vestibule-mdm/vestibule/server"
	"github.com/vestibule-mdm/vestibule/store"
)

type options struct {
	dataDir, dsn, out, prefix string
	devices, pending, users   int
	keys, workers, export     int
	// appendTo: seed a database that already holds enrollments.
	appendTo bool
}

func main() {
	var o options
	flag.StringVar(&o.dataDir, "data", "data", "the server's data directory (its SCEP CA: ca.pem, ca.key)")
	flag.StringVar(&o.dsn, "db", "", "database DSN (default: the --dev SQLite file in -data)")
	flag.IntVar(&o.devices, "devices", 1000, "devices to seed")
	flag.IntVar(&o.pending, "pending", 0, "of them, left pending approval")
	flag.IntVar(&o.users, "users", 100, "users the devices belong to")
	flag.IntVar(&o.keys, "keys", 8, "RSA device keys, shared round robin (each device still has its own certificate)")
	flag.IntVar(&o.workers, "workers", 4, "devices seeded at once")
	flag.IntVar(&o.export, "export", 1000, "approved devices written to -out, spread over the seeded range")
	flag.StringVar(&o.out, "out", "seed.json", "where to write the devices' identities and keys")
	flag.StringVar(&o.prefix, "prefix", "", "serial number prefix (default: one of this run's)")
	flag.BoolVar(&o.appendTo, "append", false, "seed a database that already holds enrollments (never a production one)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "seed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if o.devices < 1 || o.devices > 1_000_000 || o.keys < 1 || o.keys > 64 {
		return errors.New("-devices must be 1..1000000 and -keys 1..64")
	}
	if o.dsn == "" {
		o.dsn = "sqlite:" + filepath.Join(o.dataDir, "vestibule.db")
	}
	if o.prefix == "" {
		o.prefix = fmt.Sprintf("S%X", time.Now().Unix()%0xFFFF)
	}
	ca, err := server.LoadKeyPair(filepath.Join(o.dataDir, "ca.pem"), filepath.Join(o.dataDir, "ca.key"))
	if err != nil {
		return fmt.Errorf("SCEP CA (start `vestibule serve --dev` once to create it): %w", err)
	}
	st, err := store.Open(ctx, o.dsn, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		return err
	}
	// Seeded devices are approved, with certificates of the server's own
	// CA: in a production database they would be trusted devices nobody
	// owns. A database with enrollments is seeded only when asked.
	var enrolled int
	if err := st.DB().GetContext(ctx, &enrolled, `SELECT COUNT(*) FROM enrollments`); err != nil {
		return fmt.Errorf("count enrollments: %w", err)
	}
	if enrolled > 0 && !o.appendTo {
		return fmt.Errorf("the database already holds %d enrollments: seed a new one (serve --dev on an empty -data), or pass -append if it is a test database", enrolled)
	}
	keys, err := seed.Keys(o.keys)
	if err != nil {
		return err
	}
	start := time.Now()
	devices, err := seed.Run(ctx, st, seed.Options{Devices: o.devices, Pending: o.pending, Users: o.users, Keys: keys,
		CA: ca.Certificate(), CAKey: ca.Signer(), Prefix: o.prefix, Workers: o.workers,
		Progress: func(n int) {
			if n%10_000 == 0 {
				fmt.Fprintf(os.Stderr, "%d devices in %s\n", n, time.Since(start).Round(time.Second))
			}
		}})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "seeded %d devices (%d pending) in %s\n", len(devices), o.pending, time.Since(start).Round(time.Second))
	return write(o.out, keys, exported(devices, o.export))
}

// exported is every pending device and n approved ones, evenly spaced, so
// a load run touches rows across the whole table and not only its end.
func exported(devices []seed.Device, n int) []seed.Device {
	var pending, approved []seed.Device
	for _, d := range devices {
		if d.Pending {
			pending = append(pending, d)
		} else {
			approved = append(approved, d)
		}
	}
	out := pending
	if n >= len(approved) {
		return append(out, approved...)
	}
	for i := range n {
		out = append(out, approved[i*len(approved)/n])
	}
	return out
}

func write(path string, keys []*rsa.PrivateKey, devices []seed.Device) error {
	f := seed.File{Devices: devices}
	for _, k := range keys {
		f.Keys = append(f.Keys, x509.MarshalPKCS1PrivateKey(k))
	}
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	// The file holds private keys of test devices only; still, not for
	// other users of the machine, also when it existed before.
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return err
	}
	return os.Chmod(path, 0o600)
}
