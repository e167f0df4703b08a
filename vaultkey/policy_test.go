package vaultkey

import (
	"os"
	"testing"
)

func TestShippedPolicyIsTheDefault(t *testing.T) {
	b, err := os.ReadFile("../configs/vault-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != Policy("transit", "vestibule-token") {
		t.Fatal("configs/vault-policy.hcl differs from Policy(\"transit\", \"vestibule-token\"); regenerate it")
	}
}
