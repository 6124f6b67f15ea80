// exp, log, pow, sin and cos computed by this code alone, in double precision with a fixed sequence of IEEE
// operations (the build has -ffp-contract=off), so they return the same bits on every CPU. The C library's
// versions may not: glibc picks different code for CPUs with and without FMA. Used where a model's numbers
// are set up (RoPE frequencies and angles), so that logits are the same on every machine.
// Accuracy: a few units in the last place of a double, so rounded to float they are almost always the
// correctly rounded result.
#pragma once

namespace kvshare::det {

double exp(double x);        // finite x; underflows to 0 below about -745, overflows to inf above about 709
double log(double x);        // x > 0 and finite (normal or subnormal)
float powf(float x, float y);  // x > 0: exp(y · log x) rounded to float
void sincos(double x, double* s, double* c);  // |x| < 2^30

}  // namespace kvshare::det
