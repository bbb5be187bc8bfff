package mvcc

// The validators are etcd's request checks, in etcd's order, so the server
// can reject a request before proposing it with the error etcd gives. The
// store runs them again when it applies.

// ValidateRange checks a range request.
func ValidateRange(r *RangeRequest) error {
	if len(r.Key) == 0 {
		return ErrEmptyKey
	}
	if r.SortOrder < SortNone || r.SortOrder > SortDescend {
		return ErrInvalidSortOption
	}
	if r.SortTarget < SortByKey || r.SortTarget > SortByValue {
		return ErrInvalidSortOption
	}
	return nil
}

// ValidatePut checks a put request.
func ValidatePut(r *PutRequest) error {
	if len(r.Key) == 0 {
		return ErrEmptyKey
	}
	if r.IgnoreValue && len(r.Value) != 0 {
		return ErrValueProvided
	}
	if r.IgnoreLease && r.Lease != 0 {
		return ErrLeaseProvided
	}
	return nil
}

// ValidateDeleteRange checks a delete request.
func ValidateDeleteRange(r *DeleteRangeRequest) error {
	if len(r.Key) == 0 {
		return ErrEmptyKey
	}
	return nil
}

// ValidateTxn checks a txn as etcd's server does before proposing it: the
// operation count (maxOps per branch and compare list, nested txns getting
// what their parent leaves; maxOps <= 0 disables the check), empty keys,
// each operation, then duplicate keys among the puts and deletes of the
// success branch and of the failure branch (each searched through nested
// txns; see checkIntervals).
func ValidateTxn(r *TxnRequest, maxOps int) error {
	if err := checkTxnRequest(r, maxOps, maxOps > 0); err != nil {
		return err
	}
	if _, _, err := checkIntervals(r.Success); err != nil {
		return err
	}
	if _, _, err := checkIntervals(r.Failure); err != nil {
		return err
	}
	return nil
}

func checkTxnRequest(r *TxnRequest, maxOps int, limited bool) error {
	opc := max(len(r.Compare), len(r.Success), len(r.Failure))
	if limited && opc > maxOps {
		return ErrTooManyOps
	}
	for i := range r.Compare {
		if len(r.Compare[i].Key) == 0 {
			return ErrEmptyKey
		}
	}
	for _, ops := range [][]RequestOp{r.Success, r.Failure} {
		for i := range ops {
			if err := checkRequestOp(&ops[i], maxOps-opc, limited); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkRequestOp(op *RequestOp, maxOps int, limited bool) error {
	switch {
	case op.Range != nil:
		return ValidateRange(op.Range)
	case op.Put != nil:
		return ValidatePut(op.Put)
	case op.DeleteRange != nil:
		return ValidateDeleteRange(op.DeleteRange)
	case op.Txn != nil:
		return checkTxnRequest(op.Txn, maxOps, limited)
	default:
		return ErrKeyNotFound // etcd's answer to an empty operation
	}
}

// interval is a deleted key range: [begin, end), or the single key begin
// when point is set.
type interval struct {
	begin, end string
	point      bool
}

func deleteInterval(d *DeleteRangeRequest) interval {
	if len(d.RangeEnd) == 0 {
		return interval{begin: string(d.Key), point: true}
	}
	return interval{begin: string(d.Key), end: string(d.RangeEnd)}
}

// covers reports whether the deletion overlaps the put of key k. The end is
// compared as a plain string, as etcd's interval tree does: a "\x00" end
// (delete from key onwards) covers nothing, and neither does an end at or
// below begin.
func (iv interval) covers(k string) bool {
	if iv.point {
		return k == iv.begin
	}
	return iv.begin <= k && k < iv.end
}

type intervals []interval

func (ivs intervals) cover(k string) bool {
	for _, iv := range ivs {
		if iv.covers(k) {
			return true
		}
	}
	return false
}

// checkIntervals is etcd's duplicate-key rule for one list of operations:
// the deletes of this level are gathered first; each nested txn is checked
// on its own and its puts (then- and else-branch) must not repeat a put
// already gathered (a key put in both branches of one nested txn is fine:
// only one runs) nor fall in a delete of this level or of an earlier nested
// txn; last, this level's puts must be new and outside every delete
// gathered. It returns the puts and deletes for the level above. As in
// etcd, a nested txn's delete is not checked against an earlier nested
// txn's put.
func checkIntervals(ops []RequestOp) (map[string]struct{}, intervals, error) {
	var dels intervals
	for i := range ops {
		if op := &ops[i]; op.Range == nil && op.Put == nil && op.DeleteRange != nil {
			dels = append(dels, deleteInterval(op.DeleteRange))
		}
	}
	puts := make(map[string]struct{})
	for i := range ops {
		op := &ops[i]
		if op.Range != nil || op.Put != nil || op.DeleteRange != nil || op.Txn == nil {
			continue
		}
		putsThen, delsThen, err := checkIntervals(op.Txn.Success)
		if err != nil {
			return nil, nil, err
		}
		putsElse, delsElse, err := checkIntervals(op.Txn.Failure)
		if err != nil {
			return nil, nil, err
		}
		for k := range putsThen {
			if _, dup := puts[k]; dup || dels.cover(k) {
				return nil, nil, ErrDuplicateKey
			}
			puts[k] = struct{}{}
		}
		for k := range putsElse {
			if _, dup := puts[k]; dup {
				if _, sameTxn := putsThen[k]; !sameTxn {
					return nil, nil, ErrDuplicateKey
				}
			}
			if dels.cover(k) {
				return nil, nil, ErrDuplicateKey
			}
			puts[k] = struct{}{}
		}
		dels = append(dels, delsThen...)
		dels = append(dels, delsElse...)
	}
	for i := range ops {
		op := &ops[i]
		if op.Range != nil || op.Put == nil {
			continue
		}
		k := string(op.Put.Key)
		if _, dup := puts[k]; dup || dels.cover(k) {
			return nil, nil, ErrDuplicateKey
		}
		puts[k] = struct{}{}
	}
	return puts, dels, nil
}

// isReadOnly is etcd's test: every top-level operation of both branches is
// a range (a nested txn counts as a write).
func isReadOnly(r *TxnRequest) bool {
	for _, ops := range [][]RequestOp{r.Success, r.Failure} {
		for i := range ops {
			if ops[i].Range == nil {
				return false
			}
		}
	}
	return true
}
