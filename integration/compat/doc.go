// Package compat proves that etcd's own Go client, unchanged, works against
// a three-member cairn cluster, and that cairn's JSON gateway answers as
// etcd's does.
package compat
